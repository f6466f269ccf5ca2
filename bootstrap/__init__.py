"""The account bootstrap: a Pulumi project of its own, one stack per AWS account (tm-nonprod, tm-prod)."""
