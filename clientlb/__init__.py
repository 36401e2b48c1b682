"""clientlb: a load balancer inside the caller."""
