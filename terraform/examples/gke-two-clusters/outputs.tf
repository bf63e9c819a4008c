locals {
  tutorial_sql = "CREATE DATABASE IF NOT EXISTS test_encrypted_connection; CREATE TABLE IF NOT EXISTS test_encrypted_connection.message (id INT, content VARCHAR(255)); INSERT INTO test_encrypted_connection.message VALUES (1, 'Crypto Hi');"
  password     = "$(terraform output -raw database_password)"
}

output "service_url" {
  description = "$SERVICE_URL: the ingress's reserved address as a nip.io name (SNI of the cross-cluster hop, DNS SAN of the server certificate)."
  value       = local.service_url
}

output "get_credentials_commands" {
  description = "Add both clusters to your kubeconfig."
  value       = "${module.gke_client.get_credentials_command} && ${module.gke_server.get_credentials_command}"
}

output "mysql_command" {
  description = "The tutorial's SQL, from a one-off pod in the client cluster, in plaintext to the egress, which carries it over mTLS to the ingress and the database."
  value       = "kubectl --context ${module.gke_client.kubectl_context} run mysql-client --namespace default --rm -i --restart=Never --image=${var.database_image} -- mariadb -h ${module.egress.service_dns} -P 3306 -uroot -p\"${local.password}\" --skip-ssl -e \"${local.tutorial_sql}\""
}

output "read_back_command" {
  description = "Reads the row back on the server side, inside the database pod (expect: 1 Crypto Hi)."
  value       = "kubectl --context ${module.gke_server.kubectl_context} exec --namespace default deploy/${kubernetes_deployment_v1.database.metadata[0].name} -- mariadb -uroot -p\"${local.password}\" -N -B -e \"SELECT id, content FROM test_encrypted_connection.message\""
}

output "bypass_check_command" {
  description = "A client without a certificate, straight to the ingress: must fail (the ingress demands a client certificate)."
  value       = "kubectl --context ${module.gke_client.kubectl_context} run bypass --namespace default --rm -i --restart=Never --image=${var.database_image} -- mariadb -h ${local.service_url} -P 13306 -uroot -p\"${local.password}\" --connect-timeout=5 -e \"SELECT 1\""
}

output "access_log_commands" {
  description = "Each hop's access-log lines (bytes, duration, upstream, SNI, route)."
  value       = "kubectl --context ${module.gke_client.kubectl_context} logs --namespace ${module.egress.namespace} deploy/${module.egress.deployment_name} | grep strait::access; kubectl --context ${module.gke_server.kubectl_context} logs --namespace ${module.ingress.namespace} deploy/${module.ingress.deployment_name} | grep strait::access"
}

output "database_password" {
  description = "The tutorial database's root password."
  value       = random_password.database.result
  sensitive   = true
}

output "ingress_address" {
  description = "The ingress LoadBalancer's address as the cloud reports it (equals the reserved address)."
  value       = module.ingress.load_balancer_address
}

output "nat_addresses" {
  description = "Source addresses of each cluster's outbound traffic (the client's is the only source the ingress's load balancer admits)."
  value       = { client = module.network_client.nat_address, server = module.network_server.nat_address }
}

output "node_pools" {
  description = "The clusters' node pools."
  value       = { client = module.gke_client.node_pool, server = module.gke_server.node_pool }
}

output "ca_chain_pem" {
  description = "ca-chain.cert.pem: intermediate and root of the pair's PKI."
  value       = module.pki.ca_chain_pem
}

output "mesh_ca_pem" {
  description = "The mesh CA that sidecars must trust to call the egress on 15443 (ISTIO_MUTUAL)."
  value       = module.pki.mesh_ca_pem
}

output "cert_manager_issuer_ca" {
  description = "The intermediate CA as kubernetes.io/tls data, for deploy/kubernetes/cert-manager's CA Issuer Secret strait-ingress-issuer-ca."
  value       = module.pki.intermediate_ca
  sensitive   = true
}
