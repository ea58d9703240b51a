"""metagrad.data."""
