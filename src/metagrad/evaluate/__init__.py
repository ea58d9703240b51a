"""metagrad.evaluate."""
