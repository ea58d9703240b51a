"""metagrad.tasks."""
