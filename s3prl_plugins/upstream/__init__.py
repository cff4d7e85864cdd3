"""s3prl upstream experts and hub entries (ESPnet sees them through s3prl's S3prlFrontend)."""
