"""metagrad.functional."""
