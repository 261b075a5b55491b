"""The run ledger: deterministic bundles, IPFS storage, the RunLedger contract, verification."""
