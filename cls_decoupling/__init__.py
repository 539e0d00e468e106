"""The project's own package: its outputs (layer 4: run folders, reports, figures, comparisons) and its
command-line entry points (layer 5); see docs/design.md#layers. What every layer builds on lives in
`common` (layer 0). Importing it imports nothing else."""
