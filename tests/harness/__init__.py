"""What the end-to-end tests, the benchmark and the soak share: Envoy with the real filter
(`envoy`), the demo token service and echo API (`services`, also the demo of
`scripts/run.sh`), and split token helpers (`split`). Imported as `harness.*` with `tests/` on
the module path (`pytest.ini` for pytest, `PYTHONPATH` in the shell entry points)."""
