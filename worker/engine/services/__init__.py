"""Background services of the engine, run inside every API replica.

Each is one small loop; all are safe to run in many replicas at once (SKIP LOCKED sweeps).
"""
