output "network_self_link" {
  description = "The VPC, for the GKE clusters."
  value       = google_compute_network.vpc.self_link
}

output "subnets" {
  description = "Each subnet's self link and the names of its pods and services secondary ranges, for the GKE clusters."
  value = { for name, s in google_compute_subnetwork.private : name => {
    self_link           = s.self_link
    pods_range_name     = "pods"
    services_range_name = "services"
  } }
}

output "nat_address" {
  description = "The NAT's reserved address: the source of every connection the nodes make out of the VPC (the ingress's load balancer allows it)."
  value       = google_compute_address.nat.address
}
