"""DNS providers for dns-01: RFC 2136 (dnspython), hosted services (dns-lexicon), exec"""
