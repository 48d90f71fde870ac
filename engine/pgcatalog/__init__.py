"""PostgreSQL catalog emulation for pgwire clients (generated_data.py is generated)."""
