locals {
  tutorial_sql = "CREATE DATABASE IF NOT EXISTS test_encrypted_connection; CREATE TABLE IF NOT EXISTS test_encrypted_connection.message (id INT, content VARCHAR(255)); INSERT INTO test_encrypted_connection.message VALUES (1, 'Crypto Hi');"
}

output "service_url" {
  description = "$SERVICE_URL: SNI of the cross-cluster hop and DNS SAN of the server certificate."
  value       = local.service_url
}

output "mysql_command" {
  description = "The tutorial's SQL from a one-off pod in the client cluster through the egress (asks for the database's root password)."
  value       = "kubectl --context ${var.client_context} run mysql-client --namespace default --rm -it --restart=Never --image=docker.io/library/mariadb:11.4 -- mariadb -h ${module.egress.service_dns} -P 3306 -uroot -p --skip-ssl -e \"${local.tutorial_sql}\""
}

output "access_log_commands" {
  description = "Each hop's access-log lines."
  value       = "kubectl --context ${var.client_context} logs --namespace ${module.egress.namespace} deploy/${module.egress.deployment_name} | grep strait::access; kubectl --context ${var.server_context} logs --namespace ${module.ingress.namespace} deploy/${module.ingress.deployment_name} | grep strait::access"
}

output "ca_chain_pem" {
  description = "ca-chain.cert.pem: intermediate and root of the pair's PKI."
  value       = module.pki.ca_chain_pem
}

output "mesh_ca_pem" {
  description = "The mesh CA that sidecars must trust to call the egress on 15443."
  value       = module.pki.mesh_ca_pem
}

output "cert_manager_issuer_ca" {
  description = "The intermediate CA as kubernetes.io/tls data, for deploy/kubernetes/cert-manager's CA Issuer."
  value       = module.pki.intermediate_ca
  sensitive   = true
}
