"""Guest kernels: the file format (image), the config (config), the rules (rules), the check, the catalog."""
