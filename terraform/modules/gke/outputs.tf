output "endpoint" {
  description = "The control plane's public endpoint, for the kubernetes provider."
  value       = "https://${google_container_cluster.cluster.endpoint}"
}

output "ca_certificate" {
  description = "The cluster CA (PEM), for the kubernetes provider."
  value       = base64decode(google_container_cluster.cluster.master_auth[0].cluster_ca_certificate)
}

output "kubectl_context" {
  description = "The kubeconfig context `gcloud container clusters get-credentials` creates for this cluster."
  value       = "gke_${var.project_id}_${var.region}_${google_container_cluster.cluster.name}"
}

output "get_credentials_command" {
  description = "The command that adds this cluster to your kubeconfig."
  value       = "gcloud container clusters get-credentials ${google_container_cluster.cluster.name} --region ${var.region} --project ${var.project_id}"
}

output "node_pool" {
  description = "The node pool's name; the example waits for it before deploying workloads."
  value       = google_container_node_pool.nodes.name
}
