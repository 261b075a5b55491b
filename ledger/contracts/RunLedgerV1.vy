# pragma version ~=0.4.3
# RunLedger version 1, as it was before version 2 (RunLedger.vy): kept ONLY so that
# `python -m twinloop.ledger.bench` can measure its gas in the same run, and tests can
# deploy a look-alike. twinloop never records to it.
"""
@title RunLedger (version 1)
@notice Write-once record of every twinloop test run.
@dev The deployer is the admin and starts out as a recorder. Runs are keyed by
     a 16-byte run id (a UUID) and are never overwritten. `RunRecorded` indexes
     the scenario hash and `dut_key = keccak256(abi_encode(dut_id, dut_version))`
     so runs can be found by scenario and DUT version from the logs alone.
"""

VERDICT_PASS: constant(uint8) = 1
VERDICT_FAIL: constant(uint8) = 2
VERDICT_ERROR: constant(uint8) = 3


struct Run:
    run_id: bytes16
    scenario_hash: bytes32
    dut_id: String[64]
    dut_version: String[64]
    bundle_cid: String[100]
    verdict: uint8
    recorder: address
    timestamp: uint256


event RunRecorded:
    run_id: indexed(bytes16)
    scenario_hash: indexed(bytes32)
    dut_key: indexed(bytes32)
    bundle_cid: String[100]
    verdict: uint8
    recorder: address


event RecorderGranted:
    account: indexed(address)
    admin: indexed(address)


event RecorderRevoked:
    account: indexed(address)
    admin: indexed(address)


admin: public(immutable(address))
is_recorder: public(HashMap[address, bool])
runs: HashMap[bytes16, Run]


@deploy
def __init__():
    admin = msg.sender
    self.is_recorder[msg.sender] = True
    log RecorderGranted(account=msg.sender, admin=msg.sender)


@external
def grant_recorder(account: address):
    """
    @notice Allow `account` to record runs; admin only.
    """
    assert msg.sender == admin, "not the admin"
    assert account != empty(address), "zero address"
    self.is_recorder[account] = True
    log RecorderGranted(account=account, admin=msg.sender)


@external
def revoke_recorder(account: address):
    """
    @notice Stop `account` from recording runs; admin only.
    """
    assert msg.sender == admin, "not the admin"
    self.is_recorder[account] = False
    log RecorderRevoked(account=account, admin=msg.sender)


@external
def record(
    run_id: bytes16,
    scenario_hash: bytes32,
    dut_id: String[64],
    dut_version: String[64],
    bundle_cid: String[100],
    verdict: uint8,
):
    """
    @notice Record one finished run; each run id can be written only once.
    @param verdict 1 pass, 2 fail, 3 error.
    """
    assert self.is_recorder[msg.sender], "not a recorder"
    assert run_id != empty(bytes16), "empty run id"
    assert self.runs[run_id].recorder == empty(address), "run id already recorded"
    assert verdict >= VERDICT_PASS and verdict <= VERDICT_ERROR, "invalid verdict"

    self.runs[run_id] = Run(
        run_id=run_id,
        scenario_hash=scenario_hash,
        dut_id=dut_id,
        dut_version=dut_version,
        bundle_cid=bundle_cid,
        verdict=verdict,
        recorder=msg.sender,
        timestamp=block.timestamp,
    )
    log RunRecorded(
        run_id=run_id,
        scenario_hash=scenario_hash,
        dut_key=keccak256(abi_encode(dut_id, dut_version)),
        bundle_cid=bundle_cid,
        verdict=verdict,
        recorder=msg.sender,
    )


@view
@external
def get_run(run_id: bytes16) -> Run:
    """
    @notice The stored run, or an all-zero Run (recorder = 0x0) if unknown.
    """
    return self.runs[run_id]
