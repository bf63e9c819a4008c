# One gateway (egress or ingress) from the same settings as the kustomize base: the
# Deployment's pod template, the PodDisruptionBudget and the HorizontalPodAutoscaler are
# read from deploy/kubernetes/base/*.yaml, so probes, resources, security context,
# anti-affinity, the health and metrics ports, the workload-label env and the grace period
# have one source. The role's own parts (command, ports, Service, cluster id, canonical
# service label) are in local.roles; e2e/checks/terraform_static_checks.sh checks they
# match the kustomize overlays.
#
# The Deployment is a kubernetes_manifest, so the base's pod template is applied as the
# YAML says it (the typed kubernetes_deployment_v1 would need every field translated, a
# second source to keep in step). kubernetes_manifest needs the cluster's API at plan time
# (see the gke-two-clusters example's two-step apply).

locals {
  base_dir        = "${path.module}/../../../deploy/kubernetes/base"
  base_deployment = yamldecode(file("${local.base_dir}/deployment.yaml"))
  base_pdb        = yamldecode(file("${local.base_dir}/pdb.yaml"))
  base_hpa        = yamldecode(file("${local.base_dir}/hpa.yaml"))
  base_pod        = local.base_deployment.spec.template.spec
  base_container  = local.base_pod.containers[0]

  roles = {
    egress = {
      command      = "/usr/local/bin/strait-egress"
      service_type = "ClusterIP"
      ports        = { "tcp-mysql" = 3306, "tls-mesh" = 15443 }
      cluster_id   = "client-cluster"
    }
    ingress = {
      command      = "/usr/local/bin/strait-ingress"
      service_type = "LoadBalancer"
      ports        = { "tls-mysql" = 13306 }
      cluster_id   = "server-cluster"
    }
  }
  role = local.roles[var.role]
  name = "strait-${var.role}-gateway"

  selector = {
    "app.kubernetes.io/name"      = "strait"
    "app.kubernetes.io/part-of"   = "strait"
    "app.kubernetes.io/component" = var.role
  }
  labels = merge(var.labels, local.selector)
  # The pods also carry Istio's canonical service (the base's CANONICAL_SERVICE env reads it).
  pod_labels = merge(local.labels, { "service.istio.io/canonical-name" = local.name })

  container = merge(local.base_container, {
    image        = var.image
    command      = [local.role.command]
    env          = concat(local.base_container.env, [{ name = "ISTIO_META_CLUSTER_ID", value = coalesce(var.cluster_id, local.role.cluster_id) }])
    ports        = concat(local.base_container.ports, [for name, port in local.role.ports : { name = name, containerPort = port }])
    volumeMounts = concat(local.base_container.volumeMounts, [for name, path in var.credentials : { name = name, mountPath = path, readOnly = true }])
  })
  volumes = concat(
    [{ name = "config", configMap = { name = kubernetes_config_map_v1.config.metadata[0].name } }],
    [for name, path in var.credentials : { name = name, secret = { secretName = kubernetes_secret_v1.credential[name].metadata[0].name, defaultMode = 288 } }], # 0440
  )
  pod = merge(local.base_pod, {
    serviceAccountName = kubernetes_service_account_v1.gateway.metadata[0].name
    containers         = [local.container]
    volumes            = local.volumes
  })
}

resource "kubernetes_namespace_v1" "gateway" {
  metadata {
    name   = var.namespace
    labels = var.labels
  }
}

resource "kubernetes_service_account_v1" "gateway" {
  metadata {
    name      = local.name
    namespace = kubernetes_namespace_v1.gateway.metadata[0].name
    labels    = local.labels
  }
  automount_service_account_token = false
}

resource "kubernetes_config_map_v1" "config" {
  metadata {
    name      = "strait-${var.role}-config"
    namespace = kubernetes_namespace_v1.gateway.metadata[0].name
    labels    = local.labels
  }
  data = { "strait.toml" = var.config }
}

resource "kubernetes_secret_v1" "credential" {
  for_each = var.credentials
  metadata {
    name      = "strait-${var.role}-${each.key}"
    namespace = kubernetes_namespace_v1.gateway.metadata[0].name
    labels    = local.labels
  }
  type = "kubernetes.io/tls"
  data = var.credential_data[each.key]
}

resource "kubernetes_manifest" "deployment" {
  manifest = {
    apiVersion = "apps/v1"
    kind       = "Deployment"
    metadata = {
      name      = local.name
      namespace = kubernetes_namespace_v1.gateway.metadata[0].name
      labels    = local.labels
    }
    spec = merge(local.base_deployment.spec, {
      selector = { matchLabels = local.selector }
      template = {
        metadata = { labels = local.pod_labels, annotations = local.base_deployment.spec.template.metadata.annotations }
        spec     = local.pod
      }
    })
  }
  wait {
    rollout = true
  }
}

resource "kubernetes_service_v1" "gateway" {
  metadata {
    name      = local.name
    namespace = kubernetes_namespace_v1.gateway.metadata[0].name
    labels    = local.labels
  }
  spec {
    type                        = local.role.service_type
    selector                    = local.selector
    load_balancer_ip            = var.role == "ingress" ? var.load_balancer_ip : null
    load_balancer_source_ranges = var.role == "ingress" ? var.load_balancer_source_ranges : null
    external_traffic_policy     = var.role == "ingress" ? "Local" : null
    dynamic "port" {
      for_each = local.role.ports
      content {
        name        = port.key
        port        = port.value
        target_port = port.key
      }
    }
  }
}

resource "kubernetes_pod_disruption_budget_v1" "gateway" {
  metadata {
    name      = local.name
    namespace = kubernetes_namespace_v1.gateway.metadata[0].name
    labels    = local.labels
  }
  spec {
    min_available = local.base_pdb.spec.minAvailable
    selector {
      match_labels = local.selector
    }
  }
}

resource "kubernetes_horizontal_pod_autoscaler_v2" "gateway" {
  metadata {
    name      = local.name
    namespace = kubernetes_namespace_v1.gateway.metadata[0].name
    labels    = local.labels
  }
  spec {
    min_replicas = local.base_hpa.spec.minReplicas
    max_replicas = local.base_hpa.spec.maxReplicas
    scale_target_ref {
      api_version = "apps/v1"
      kind        = "Deployment"
      name        = kubernetes_manifest.deployment.manifest.metadata.name
    }
    metric {
      type = "Resource"
      resource {
        name = "cpu"
        target {
          type                = "Utilization"
          average_utilization = one([for m in local.base_hpa.spec.metrics : m.resource.target.averageUtilization if m.resource.name == "cpu"])
        }
      }
    }
    behavior {
      scale_down {
        stabilization_window_seconds = local.base_hpa.spec.behavior.scaleDown.stabilizationWindowSeconds
        select_policy                = "Max"
        dynamic "policy" {
          for_each = local.base_hpa.spec.behavior.scaleDown.policies
          content {
            type           = policy.value.type
            value          = policy.value.value
            period_seconds = policy.value.periodSeconds
          }
        }
      }
    }
  }
}

resource "kubernetes_network_policy_v1" "gateway" {
  metadata {
    name      = local.name
    namespace = kubernetes_namespace_v1.gateway.metadata[0].name
    labels    = local.labels
  }
  spec {
    pod_selector {
      match_labels = local.selector
    }
    policy_types = ["Ingress"]
    # The gateway ports: from any pod of this cluster (egress), from anywhere (ingress:
    # the load balancer's source ranges and mutual TLS decide).
    ingress {
      dynamic "from" {
        for_each = var.role == "egress" ? [1] : []
        content {
          namespace_selector {}
        }
      }
      dynamic "ports" {
        for_each = local.role.ports
        content {
          port     = ports.value
          protocol = "TCP"
        }
      }
    }
    # The base's container ports, health and metrics: the kubelet's probes and Prometheus.
    # The admin port is on loopback and no rule names it.
    ingress {
      dynamic "ports" {
        for_each = local.base_container.ports
        content {
          port     = ports.value.containerPort
          protocol = "TCP"
        }
      }
    }
  }
}
