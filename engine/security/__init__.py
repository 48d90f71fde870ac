"""Who may do what: authentication and authorisation."""
