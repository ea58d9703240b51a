"""metagrad.algorithms."""
