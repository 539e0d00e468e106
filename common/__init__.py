"""Layer 0 (docs/design.md#layers): what every other package of the project builds on and which
imports none of them: the user-error type, seeded per-sample numbers, lazy package exports, how
images are prepared, and how a folder this tool wrote is recognised. Importing it imports nothing."""
