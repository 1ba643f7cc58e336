"""The fuzzer over Switchyard's whole gRPC surface (issue 16), and the inputs it found.

`make test` runs it for SWITCHYARD_FUZZ_SECONDS (60 by default), `make fuzz`
for 600; SWITCHYARD_FUZZ_SEED replays a run's inputs.
"""
