"""metagrad.config."""
