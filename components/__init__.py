"""Pulumi ComponentResources of the demand pipeline, and the settings, naming and policy builders they share."""
