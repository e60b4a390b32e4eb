"""trackctl: parcel-tracking operations on PostgreSQL from one CLI and cron."""

__version__ = "0.1.0"
