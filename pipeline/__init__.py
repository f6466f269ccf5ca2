"""The Lambda handler package: DynamoDB change records from Kinesis to Parquet on S3."""
