"""metagrad.train."""
