"""metagrad.cli."""
