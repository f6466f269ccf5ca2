"""The embedded local AWS and the demand data used by the demo, the benchmark and the tests."""
