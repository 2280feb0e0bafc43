# Pub/Sub: the names and settings of cliffhanger/resources.py (TOPICS, SUBSCRIPTIONS), one line each.
# tests/infra/test_terraform.py parses these two locals and fails on any difference in either
# direction, naming the line to add or change. Adding a topic or subscription = one line here.

locals {
  pubsub_topics = [
    "events",
    "events-dead-letter",
    "feature-changes",
    "catalog",
    "retrain",
    "purge-dead-letter",
    "candidate-changes",
    "candidates-dead-letter",
    "item-changes",
  ]

  # max_delivery_attempts only means something with a dead-letter topic (it is part of Pub/Sub's
  # dead_letter_policy), so it is null exactly where dead_letter_topic is null.
  pubsub_subscriptions = {
    "events-features"                = { topic = "events", dead_letter_topic = "events-dead-letter", max_delivery_attempts = 5, ack_deadline_seconds = 60 }
    "events-dead-letter-inspect"     = { topic = "events-dead-letter", dead_letter_topic = null, max_delivery_attempts = null, ack_deadline_seconds = 60 }
    "feature-changes-invalidation"   = { topic = "feature-changes", dead_letter_topic = null, max_delivery_attempts = null, ack_deadline_seconds = 60 }
    "catalog-invalidation"           = { topic = "catalog", dead_letter_topic = null, max_delivery_attempts = null, ack_deadline_seconds = 60 }
    "retrain-trainer"                = { topic = "retrain", dead_letter_topic = null, max_delivery_attempts = null, ack_deadline_seconds = 60 }
    "purge-dead-letter-inspect"      = { topic = "purge-dead-letter", dead_letter_topic = null, max_delivery_attempts = null, ack_deadline_seconds = 60 }
    "feature-changes-candidates"     = { topic = "feature-changes", dead_letter_topic = null, max_delivery_attempts = null, ack_deadline_seconds = 60 }
    "candidate-changes-invalidation" = { topic = "candidate-changes", dead_letter_topic = null, max_delivery_attempts = null, ack_deadline_seconds = 60 }
    "candidates-dead-letter-inspect" = { topic = "candidates-dead-letter", dead_letter_topic = null, max_delivery_attempts = null, ack_deadline_seconds = 60 }
    "catalog-serving"                = { topic = "catalog", dead_letter_topic = null, max_delivery_attempts = null, ack_deadline_seconds = 60 }
    "item-changes-serving"           = { topic = "item-changes", dead_letter_topic = null, max_delivery_attempts = null, ack_deadline_seconds = 60 }
    "catalog-candidates"             = { topic = "catalog", dead_letter_topic = null, max_delivery_attempts = null, ack_deadline_seconds = 60 }
    "events-prewarm"                 = { topic = "events", dead_letter_topic = null, max_delivery_attempts = null, ack_deadline_seconds = 60 }
  }

  dead_lettered_subscriptions = { for name, s in local.pubsub_subscriptions : name => s if s.dead_letter_topic != null }

  # Pub/Sub's service agent moves messages to dead-letter topics on the subscription's behalf.
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic" "topic" {
  for_each = toset(local.pubsub_topics)

  name       = each.key
  depends_on = [google_project_service.api]
}

resource "google_pubsub_subscription" "subscription" {
  for_each = local.pubsub_subscriptions

  name                 = each.key
  topic                = google_pubsub_topic.topic[each.value.topic].id
  ack_deadline_seconds = each.value.ack_deadline_seconds

  # Never expire for inactivity (the default is 31 days): the *-inspect subscriptions are read rarely,
  # and an expired subscription silently drops what is published meanwhile.
  expiration_policy {
    ttl = ""
  }

  dynamic "dead_letter_policy" {
    for_each = each.value.dead_letter_topic == null ? [] : [each.value]
    content {
      dead_letter_topic     = google_pubsub_topic.topic[dead_letter_policy.value.dead_letter_topic].id
      max_delivery_attempts = dead_letter_policy.value.max_delivery_attempts
    }
  }
}

# Dead lettering needs the Pub/Sub service agent to publish to the dead-letter topic ...
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = toset([for s in values(local.dead_lettered_subscriptions) : s.dead_letter_topic])

  topic  = google_pubsub_topic.topic[each.key].name
  role   = "roles/pubsub.publisher"
  member = local.pubsub_service_agent
}

# ... and to acknowledge (remove) the forwarded message on the source subscription.
resource "google_pubsub_subscription_iam_member" "dead_letter_source_subscriber" {
  for_each = local.dead_lettered_subscriptions

  subscription = google_pubsub_subscription.subscription[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
