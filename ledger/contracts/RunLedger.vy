# pragma version ~=0.4.3
# pragma evm-version cancun
# pragma optimize gas
"""
@title RunLedger
@notice Write-once record of every twinloop test run, with role-based access,
        reviewed baselines and maintenance requests from intelligent twins.
@dev Version 2. A run costs ONE storage slot (the write-once guard) plus an
     indexed `RunRecorded` event carrying the details. The slot packs:

         bits   0..7    verdict (1 pass, 2 fail, 3 error)
         bits   8..15   the recorder's roles when it wrote the run (Role flags)
         bits  16..79   the block number of the record
         bits  80..255  the top 176 bits of
                        keccak256(abi_encode(scenario_hash, dut_key,
                                             bundle_digest, recorder))

     so the contract itself can check a baseline against the run's details,
     and a client can check that the event it found is the one that was
     written. Role changes are events, so whether an account held a role at
     any block can be reconstructed from the logs. Runs are found by scenario
     hash and `dut_key = keccak256(abi_encode(dut_id, dut_version))` from the
     logs alone. `bundle_digest` is the sha2-256 digest inside the bundle's
     CIDv0 (`Qm...`).

     A batch of runs costs ONE storage slot too, whatever its size: the
     RFC 6962 Merkle root over the runs' leaves (``twinloop.ledger.merkle``,
     leaf encoding in ``twinloop.ledger.batch``) keys a write-once slot that
     packs:

         bits   0..7    the recorder's roles when it wrote the batch
         bits   8..71   the block number of the record
         bits  72..135  the number of runs (leaves) in the tree
         bits 136..255  the top 120 bits of
                        keccak256(abi_encode(manifest_digest, recorder))

     and an indexed `BatchRecorded` event. The runs of a batch are not written
     one by one: their details live in the batch manifest (a bundle on IPFS
     whose CIDv0 digest is `manifest_digest`), and each run is proven by its
     inclusion proof against the root.

     The admin role is held by the deployer, who also starts out as a
     recorder. Admins grant and revoke every role, admin included, but cannot
     revoke their own admin role (so the contract is never left without one).
"""

VERSION: public(constant(String[32])) = "twinloop.RunLedger/3"

VERDICT_PASS: constant(uint8) = 1
VERDICT_FAIL: constant(uint8) = 2
VERDICT_ERROR: constant(uint8) = 3

# the slot keeps the top 176 bits of the details' hash, above the lower 80 bits
COMMITMENT_SHIFT: constant(uint256) = 80
# a batch's slot keeps the top 120 bits of the manifest's hash, above size, block and roles
BATCH_COMMITMENT_SHIFT: constant(uint256) = 136
MAX_BATCH_SIZE: constant(uint256) = 2**64 - 1


flag Role:
    RECORDER
    REVIEWER
    ADMIN


event RoleGranted:
    role: indexed(Role)
    account: indexed(address)
    admin: indexed(address)


event RoleRevoked:
    role: indexed(Role)
    account: indexed(address)
    admin: indexed(address)


event RunRecorded:
    run_id: indexed(bytes16)
    scenario_hash: indexed(bytes32)
    dut_key: indexed(bytes32)
    bundle_digest: bytes32
    verdict: uint8
    recorder: address
    dut_id: String[64]
    dut_version: String[64]


event BatchRecorded:
    root: indexed(bytes32)
    manifest_digest: bytes32
    size: uint256
    recorder: address


event BaselineAccepted:
    scenario_hash: indexed(bytes32)
    dut_key: indexed(bytes32)
    run_id: bytes16
    reviewer: address


event MaintenanceRequested:
    run_id: indexed(bytes16)
    dut_key: indexed(bytes32)
    device: String[64]
    rul_seconds: uint256
    limit_seconds: uint256
    reason: String[256]
    requester: address


roles: public(HashMap[address, Role])
runs: public(HashMap[bytes16, uint256])
baseline: public(HashMap[bytes32, HashMap[bytes32, bytes16]])
batches: public(HashMap[bytes32, uint256])


@deploy
def __init__():
    self.roles[msg.sender] = Role.ADMIN | Role.RECORDER
    log RoleGranted(role=Role.ADMIN, account=msg.sender, admin=msg.sender)
    log RoleGranted(role=Role.RECORDER, account=msg.sender, admin=msg.sender)


@view
@external
def has_role(account: address, role: Role) -> bool:
    """
    @notice Whether `account` holds `role` now (see the role events for the past).
    """
    return role in self.roles[account]


@internal
def _check_role_argument(role: Role):
    assert role == Role.RECORDER or role == Role.REVIEWER or role == Role.ADMIN, "unknown role"


@external
def grant_role(role: Role, account: address):
    """
    @notice Give `account` one role; admin only. Granting a held role changes nothing.
    """
    assert Role.ADMIN in self.roles[msg.sender], "not the admin"
    self._check_role_argument(role)
    assert account != empty(address), "zero address"
    held: Role = self.roles[account]
    if role not in held:
        self.roles[account] = held | role
        log RoleGranted(role=role, account=account, admin=msg.sender)


@external
def revoke_role(role: Role, account: address):
    """
    @notice Take one role from `account`; admin only. Revoking a role not held changes nothing.
    """
    assert Role.ADMIN in self.roles[msg.sender], "not the admin"
    self._check_role_argument(role)
    assert not (role == Role.ADMIN and account == msg.sender), "cannot revoke own admin role"
    held: Role = self.roles[account]
    if role in held:
        self.roles[account] = held & ~role
        log RoleRevoked(role=role, account=account, admin=msg.sender)


@external
def record(
    run_id: bytes16,
    scenario_hash: bytes32,
    dut_id: String[64],
    dut_version: String[64],
    bundle_digest: bytes32,
    verdict: uint8,
):
    """
    @notice Record one finished run; each run id can be written only once.
    @param bundle_digest The sha2-256 digest of the bundle's CIDv0.
    @param verdict 1 pass, 2 fail, 3 error.
    """
    held: Role = self.roles[msg.sender]
    assert Role.RECORDER in held, "not a recorder"
    assert run_id != empty(bytes16), "empty run id"
    assert self.runs[run_id] == 0, "run id already recorded"
    assert verdict >= VERDICT_PASS and verdict <= VERDICT_ERROR, "invalid verdict"

    dut_key: bytes32 = keccak256(abi_encode(dut_id, dut_version))
    commitment: uint256 = convert(
        keccak256(abi_encode(scenario_hash, dut_key, bundle_digest, msg.sender)), uint256)
    self.runs[run_id] = (
        ((commitment >> COMMITMENT_SHIFT) << COMMITMENT_SHIFT)
        | (convert(convert(block.number, uint64), uint256) << 16)
        | (convert(held, uint256) << 8)
        | convert(verdict, uint256)
    )
    log RunRecorded(
        run_id=run_id,
        scenario_hash=scenario_hash,
        dut_key=dut_key,
        bundle_digest=bundle_digest,
        verdict=verdict,
        recorder=msg.sender,
        dut_id=dut_id,
        dut_version=dut_version,
    )


@external
def record_batch(root: bytes32, size: uint256, manifest_digest: bytes32):
    """
    @notice Record a batch of finished runs as the RFC 6962 Merkle root over their
            leaves; each root can be written only once. The runs themselves are in
            the manifest, proven one by one with inclusion proofs against `root`.
    @param size The number of runs (leaves) in the tree.
    @param manifest_digest The sha2-256 digest of the batch manifest's CIDv0.
    """
    held: Role = self.roles[msg.sender]
    assert Role.RECORDER in held, "not a recorder"
    assert root != empty(bytes32), "empty root"
    assert size != 0 and size <= MAX_BATCH_SIZE, "invalid batch size"
    assert self.batches[root] == 0, "batch already recorded"

    commitment: uint256 = convert(keccak256(abi_encode(manifest_digest, msg.sender)), uint256)
    self.batches[root] = (
        ((commitment >> BATCH_COMMITMENT_SHIFT) << BATCH_COMMITMENT_SHIFT)
        | (size << 72)
        | (convert(convert(block.number, uint64), uint256) << 8)
        | convert(held, uint256)
    )
    log BatchRecorded(root=root, manifest_digest=manifest_digest, size=size, recorder=msg.sender)


@external
def accept_baseline(
    run_id: bytes16,
    scenario_hash: bytes32,
    dut_key: bytes32,
    bundle_digest: bytes32,
    recorder: address,
):
    """
    @notice Make a recorded, passing run the baseline of its (scenario, DUT version);
            reviewer only. The run's details (from its RunRecorded event) must match
            what was written. A later acceptance replaces the baseline.
    """
    assert Role.REVIEWER in self.roles[msg.sender], "not a reviewer"
    slot: uint256 = self.runs[run_id]
    assert slot != 0, "run not recorded"
    assert slot & 255 == convert(VERDICT_PASS, uint256), "run did not pass"
    commitment: uint256 = convert(
        keccak256(abi_encode(scenario_hash, dut_key, bundle_digest, recorder)), uint256)
    assert slot >> COMMITMENT_SHIFT == commitment >> COMMITMENT_SHIFT, "run details do not match"
    self.baseline[scenario_hash][dut_key] = run_id
    log BaselineAccepted(
        scenario_hash=scenario_hash, dut_key=dut_key, run_id=run_id, reviewer=msg.sender)


@external
def request_maintenance(
    run_id: bytes16,
    dut_key: bytes32,
    device: String[64],
    rul_seconds: uint256,
    limit_seconds: uint256,
    reason: String[256],
):
    """
    @notice Ask for maintenance of `device` (an intelligent twin predicted its
            remaining useful life below the scenario's limit); recorder only.
            The run may still be in progress, so it need not be recorded yet.
    """
    assert Role.RECORDER in self.roles[msg.sender], "not a recorder"
    assert run_id != empty(bytes16), "empty run id"
    log MaintenanceRequested(
        run_id=run_id,
        dut_key=dut_key,
        device=device,
        rul_seconds=rul_seconds,
        limit_seconds=limit_seconds,
        reason=reason,
        requester=msg.sender,
    )
