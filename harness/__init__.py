"""The harness: scenarios, runner, judge, run records, CLI and pytest plugin."""
