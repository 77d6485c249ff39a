"""The lab: a whole fabric on one Linux machine, hosts and machines as network namespaces."""
