"""What task code and application code call. The public names are re-exported by ``worker``."""
