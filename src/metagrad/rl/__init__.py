"""metagrad.rl."""
