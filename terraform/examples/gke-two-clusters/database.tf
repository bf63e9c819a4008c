# The tutorial's database in the server cluster: mysql.default.svc.cluster.local:3306,
# reached only through the ingress (its Service is ClusterIP).

resource "random_password" "database" {
  length  = 24
  special = false
}

resource "kubernetes_secret_v1" "database" {
  #checkov:skip=CKV_K8S_21:the tutorial runs its database in the default namespace (mysql.default.svc.cluster.local)
  provider = kubernetes.server
  metadata {
    name      = "mysql"
    namespace = "default"
  }
  data = { "root-password" = random_password.database.result }
}

resource "kubernetes_deployment_v1" "database" {
  provider = kubernetes.server
  #checkov:skip=CKV_K8S_43:the tutorial's demo database; pin a digest for anything kept
  #checkov:skip=CKV_K8S_14:the image is pinned by tag in var.database_image
  #checkov:skip=CKV_K8S_22:the database writes its data directory (an emptyDir here) and /run/mysqld
  #checkov:skip=CKV_K8S_35:the official image reads the root password from an environment variable, filled from a Secret
  #checkov:skip=CKV_K8S_21:the tutorial runs its database in the default namespace (mysql.default.svc.cluster.local)
  metadata {
    name      = "mysql"
    namespace = "default"
    labels    = { app = "mysql" }
  }
  spec {
    replicas = 1
    selector {
      match_labels = { app = "mysql" }
    }
    template {
      metadata {
        labels = { app = "mysql" }
      }
      spec {
        automount_service_account_token = false
        security_context {
          run_as_non_root = true
          run_as_user     = 999
          run_as_group    = 999
          fs_group        = 999
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }
        container {
          name              = "mysql"
          image             = var.database_image
          image_pull_policy = "Always"
          env {
            name = "MARIADB_ROOT_PASSWORD"
            value_from {
              secret_key_ref {
                name = kubernetes_secret_v1.database.metadata[0].name
                key  = "root-password"
              }
            }
          }
          port {
            name           = "mysql"
            container_port = 3306
          }
          readiness_probe {
            tcp_socket {
              port = "mysql"
            }
            period_seconds = 5
          }
          liveness_probe {
            tcp_socket {
              port = "mysql"
            }
            initial_delay_seconds = 30
            period_seconds        = 10
          }
          resources {
            requests = { cpu = "250m", memory = "512Mi" }
            limits   = { cpu = "1", memory = "1Gi" }
          }
          security_context {
            allow_privilege_escalation = false
            privileged                 = false
            capabilities {
              drop = ["ALL"]
            }
          }
          volume_mount {
            name       = "data"
            mount_path = "/var/lib/mysql"
          }
        }
        volume {
          name = "data"
          empty_dir {}
        }
      }
    }
  }
}

resource "kubernetes_service_v1" "database" {
  #checkov:skip=CKV_K8S_21:the tutorial runs its database in the default namespace (mysql.default.svc.cluster.local)
  provider = kubernetes.server
  metadata {
    name      = "mysql"
    namespace = "default"
  }
  spec {
    selector = { app = "mysql" }
    port {
      name        = "mysql"
      port        = 3306
      target_port = "mysql"
    }
  }
}
