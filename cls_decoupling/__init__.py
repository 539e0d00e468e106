"""The project's own package: its user-error type (layer 0), its outputs (layer 3) and its command-line
entry points (layer 4); see docs/design.md#layers. Importing it imports nothing else."""
