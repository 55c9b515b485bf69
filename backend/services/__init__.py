"""Business rules over a SQLAlchemy Connection; they return dataclasses and know no HTTP."""
