"""The REST API's shapes: field types, request models, response models, and validation."""
