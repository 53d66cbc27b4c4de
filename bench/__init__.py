"""Benchmarks of trigger-worker side by side with Celery and Procrastinate (issue 7).

``python -m bench --n 5000`` runs every scenario for every system it can reach and prints one
markdown table with medians, min–max and ratios ours/peer. See docs/benchmarks.md.
"""
