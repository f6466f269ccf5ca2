"""The curator: the only writer of the analysts' Iceberg tables (``registration_changes`` and ``registrations``)."""
