"""The feature contract shared by runtime and training: schema, validation, durable spool, ClickHouse store.

Import the parts you need from their modules: `features.schema`, `features.spool`, `features.shipper`,
`features.store`. This package imports nothing from runtime/, ranker/ or pipelines/.
"""
