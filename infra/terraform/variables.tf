variable "project_id" {
  description = "GCP project id. The pipelines and serving read it as --project / CLIFFHANGER_PROJECT."
  type        = string
}

variable "region" {
  description = "Region for Dataflow jobs, Cloud Run and the buckets."
  type        = string
  default     = "us-central1"
}

variable "env" {
  description = "Environment name (dev, staging, prod): a label and part of bucket / account names (<project>-cliffhanger-<env>-pipeline must fit GCS's 63 characters)."
  type        = string
  default     = "dev"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,7}$", var.env))
    error_message = "env must be lowercase letters, digits and dashes, at most 8 characters."
  }
}

# --- Bigtable ---------------------------------------------------------------------------------

variable "bigtable_instance_id" {
  description = "Bigtable instance id (CLIFFHANGER_BT_INSTANCE / --bigtable_instance); the code's default is cliffhanger."
  type        = string
  default     = "cliffhanger"
}

variable "bigtable_cluster_zone" {
  description = "Zone of the Bigtable cluster; keep it in var.region so Dataflow workers and Cloud Run read locally."
  type        = string
  default     = "us-central1-b"
}

variable "bigtable_storage_type" {
  description = "SSD: serving does point reads under a 20 ms deadline."
  type        = string
  default     = "SSD"
}

variable "bigtable_min_nodes" {
  description = "Autoscaling floor."
  type        = number
  default     = 1
}

variable "bigtable_max_nodes" {
  description = "Autoscaling ceiling."
  type        = number
  default     = 5

  validation {
    condition     = var.bigtable_max_nodes >= 1
    error_message = "bigtable_max_nodes must be at least 1."
  }
}

variable "bigtable_cpu_target" {
  description = "Autoscaling CPU target in percent (10-80); lower keeps read latency flat under write bursts."
  type        = number
  default     = 60
}

variable "deletion_protection" {
  description = "Protect the Bigtable instance and tables from terraform destroy. Turn off only for throwaway envs."
  type        = bool
  default     = true
}

# --- Pipelines (Dataflow) ----------------------------------------------------------------------

variable "dataflow_launchers" {
  description = "Members (user:, group:, serviceAccount:) allowed to launch jobs as the Dataflow worker account (roles/iam.serviceAccountUser on it)."
  type        = list(string)
  default     = []
}

variable "temp_retention_days" {
  description = "Objects under tmp/ in the pipeline bucket are deleted after this many days."
  type        = number
  default     = 7
}

variable "bundle_noncurrent_retention_days" {
  description = "Overwritten or deleted bundle objects (e.g. a previous CURRENT) are kept this long for rollback and audit."
  type        = number
  default     = 30
}

# --- Serving (Cloud Run) -----------------------------------------------------------------------

variable "serving_image" {
  description = "Container image of the serving API (python -m serving), e.g. REGION-docker.pkg.dev/PROJECT/cliffhanger/serving:TAG."
  type        = string
}

variable "serving_min_instances" {
  description = "Warm instances: the bundle and catalog load at start, so a cold start is seconds of 503 on /readyz."
  type        = number
  default     = 1
}

variable "serving_max_instances" {
  description = "Upper bound on Cloud Run instances."
  type        = number
  default     = 10
}

variable "serving_cpu" {
  description = "vCPUs per instance."
  type        = string
  default     = "2"
}

variable "serving_memory" {
  description = "Memory per instance (the ScaNN index, ONNX ranker and response cache live in process)."
  type        = string
  default     = "4Gi"
}

variable "serving_settings" {
  description = "Extra serving knobs, by their environment names in serving/settings.py (e.g. CLIFFHANGER_BUDGET_MS = \"50\"). Unset names keep the code's defaults; names not in local.serving_tunable_env are refused. Secrets never go here."
  type        = map(string)
  default     = {}
}

variable "serving_invokers" {
  description = "Members allowed to call the Cloud Run service (roles/run.invoker): the edge's service account, or [\"allUsers\"] if the edge cannot authenticate."
  type        = list(string)
  default     = []
}

variable "admin_api_enabled" {
  description = "Wire CLIFFHANGER_ADMIN_TOKEN from Secret Manager (a version must exist). false = /admin/* answers 503."
  type        = bool
  default     = true
}

variable "catalog_object" {
  description = "Object path of catalog.json in the bundle bucket (mounted read-only into serving; pipelines take gs://BUCKET/<this> as --catalog)."
  type        = string
  default     = "world/catalog.json"
}

variable "deploy_serving" {
  description = "Create the Cloud Run service. false on the first apply (no secret versions, no bundle yet), then true."
  type        = bool
  default     = true
}
