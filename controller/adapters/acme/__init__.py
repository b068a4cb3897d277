"""The ACME client: account (lego layout), HTTP layer, order driver, error mapping, and the
Issuer (client) that app.py builds."""
