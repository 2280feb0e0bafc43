# Bigtable: the tables and column families of cliffhanger/resources.py (TABLES), one line per family.
# Row keys and what each family holds: see the docstring of cliffhanger/resources.py.
# tests/infra/test_terraform.py compares this map with resources.py (names and GC rules, both ways).

locals {
  # null = no limit of that kind; both set = a cell goes when either limit says so (union), as the
  # local stack provisions it (cliffhanger/localstack/provision.py gc_rule).
  bigtable_tables = {
    "features" = {
      "u"    = { max_versions = 1, max_age_days = null }
      "cw"   = { max_versions = 1, max_age_days = null }
      "done" = { max_versions = null, max_age_days = 90 }
      "i"    = { max_versions = 1, max_age_days = null }
      "cand" = { max_versions = 1, max_age_days = null }
    }
  }

  bigtable_families = merge([
    for table, families in local.bigtable_tables : {
      for family, gc in families : "${table}/${family}" => merge(gc, { table = table, family = family })
    }
  ]...)

  # GC rules in the provider's gc_rules JSON form (its max_age / max_version blocks have known drift
  # issues). max_age is a Go duration, so days are written as hours.
  bigtable_gc_rules = {
    for key, f in local.bigtable_families : key => [
      for rule in [
        f.max_versions == null ? null : jsonencode({ max_version = f.max_versions }),
        f.max_age_days == null ? null : jsonencode({ max_age = "${f.max_age_days * 24}h" }),
      ] : rule if rule != null
    ]
  }
}

resource "google_bigtable_instance" "this" {
  name                = var.bigtable_instance_id
  display_name        = "cliffhanger ${var.env}"
  deletion_protection = var.deletion_protection

  cluster {
    cluster_id   = "${var.bigtable_instance_id}-c1"
    zone         = var.bigtable_cluster_zone
    storage_type = var.bigtable_storage_type

    autoscaling_config {
      min_nodes  = var.bigtable_min_nodes
      max_nodes  = var.bigtable_max_nodes
      cpu_target = var.bigtable_cpu_target
    }
  }

  depends_on = [google_project_service.api]
}

resource "google_bigtable_table" "table" {
  for_each = local.bigtable_tables

  name                = each.key
  instance_name       = google_bigtable_instance.this.name
  deletion_protection = var.deletion_protection ? "PROTECTED" : "UNPROTECTED"

  dynamic "column_family" {
    for_each = each.value
    content {
      family = column_family.key
    }
  }
}

resource "google_bigtable_gc_policy" "family" {
  for_each = { for key, rules in local.bigtable_gc_rules : key => rules if length(rules) > 0 }

  instance_name = google_bigtable_instance.this.name
  table         = google_bigtable_table.table[local.bigtable_families[each.key].table].name
  column_family = local.bigtable_families[each.key].family
  gc_rules      = length(each.value) == 1 ? "{\"rules\":[${each.value[0]}]}" : "{\"mode\":\"union\",\"rules\":[${join(",", each.value)}]}"

  # A GC policy cannot be deleted on a replicated instance; on destroy, leave it with its table.
  deletion_policy = "ABANDON"
}

# Least privilege on the instance, not the project.
resource "google_bigtable_instance_iam_member" "dataflow_user" {
  instance = google_bigtable_instance.this.name
  role     = "roles/bigtable.user"
  member   = google_service_account.dataflow.member
}

resource "google_bigtable_instance_iam_member" "serving_reader" {
  instance = google_bigtable_instance.this.name
  role     = "roles/bigtable.reader"
  member   = google_service_account.serving.member
}
