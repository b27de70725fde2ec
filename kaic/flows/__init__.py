"""Application flows: what each command does, between the CLI and the parts below it
(see docs/architecture.md)."""
