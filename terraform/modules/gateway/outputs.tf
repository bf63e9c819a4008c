output "namespace" {
  description = "The namespace the gateway runs in."
  value       = kubernetes_namespace_v1.gateway.metadata[0].name
}

output "service_dns" {
  description = "In-cluster DNS name of the gateway's Service (for the egress: what apps connect to on 3306)."
  value       = "${kubernetes_service_v1.gateway.metadata[0].name}.${kubernetes_namespace_v1.gateway.metadata[0].name}.svc.cluster.local"
}

output "load_balancer_address" {
  description = "Ingress: the LoadBalancer's address once assigned ($SERVICE_URL is ADDRESS.nip.io when no DNS name is given); null for the egress."
  value       = var.role == "ingress" ? try(kubernetes_service_v1.gateway.status[0].load_balancer[0].ingress[0].ip, null) : null
}

output "deployment_name" {
  description = "Name of the gateway's Deployment (kubectl rollout status, logs)."
  value       = kubernetes_manifest.deployment.manifest.metadata.name
}
