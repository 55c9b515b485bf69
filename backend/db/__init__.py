"""The metadata database: schema, engines and transactions, migrations."""
