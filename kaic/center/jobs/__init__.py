"""The center's jobs: store, scheduler, submission and log reading."""
