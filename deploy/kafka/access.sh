#!/usr/bin/env bash
# Generated from the code by `tipline docs` (the catalogue of shared/topics.py, the
# services' consumer groups, deploy/config/routing.yaml; see tipline/access.py): do not
# edit by hand.
#
# SCRAM-SHA-512 users and ACLs for every tipline principal, with Apache Kafka's own
# tools: run by compose's `kafka-access` one-shot and the k8s Job `tipline-kafka-access`
# (apache/kafka image). Re-run it after adding an agency: it is idempotent (a user's
# password is set again, existing ACLs stay). It never removes an ACL: revoke with
# `kafka-acls.sh --remove` (list with `kafka-acls.sh --list --principal User:NAME`).
#
# Environment: TIPLINE_KAFKA_ADMIN_BOOTSTRAP (host:port), TIPLINE_KAFKA_ADMIN_JAAS (the
# admin's sasl.jaas.config), TIPLINE_KAFKA_ADMIN_PROTOCOL (default SASL_PLAINTEXT),
# TIPLINE_KAFKA_ADMIN_MECHANISM (default PLAIN), TIPLINE_KAFKA_ADMIN_CA_FILE (PEM, for
# SASL_SSL), and each principal's password in TIPLINE_PASSWORD_<NAME> (`tipline deploy
# secrets` writes them).
set -euo pipefail
bin="${KAFKA_HOME:-/opt/kafka}/bin"
server="${TIPLINE_KAFKA_ADMIN_BOOTSTRAP:?the Kafka address the admin connects to}"
config="$(mktemp)"
trap 'rm -f "$config"' EXIT
printf 'security.protocol=%s\nsasl.mechanism=%s\nsasl.jaas.config=%s\n' \
  "${TIPLINE_KAFKA_ADMIN_PROTOCOL:-SASL_PLAINTEXT}" \
  "${TIPLINE_KAFKA_ADMIN_MECHANISM:-PLAIN}" \
  "${TIPLINE_KAFKA_ADMIN_JAAS:?the sasl.jaas.config of the admin}" > "$config"
if [ -n "${TIPLINE_KAFKA_ADMIN_CA_FILE:-}" ]; then
  printf 'ssl.truststore.type=PEM\nssl.truststore.location=%s\n' "$TIPLINE_KAFKA_ADMIN_CA_FILE" >> "$config"
fi
user() {
  "$bin/kafka-configs.sh" --bootstrap-server "$server" --command-config "$config" \
    --alter --entity-type users --entity-name "$1" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=$2]"
}
acl() {
  "$bin/kafka-acls.sh" --bootstrap-server "$server" --command-config "$config" --add --force "$@"
}

# admin: a super user (super.users), no ACLs. Its SCRAM login is made only
# where TIPLINE_PASSWORD_ADMIN is given (compose); on your own cluster the admin is yours.
if [ -n "${TIPLINE_PASSWORD_ADMIN:-}" ]; then user admin "$TIPLINE_PASSWORD_ADMIN"; fi

# intake
user intake "${TIPLINE_PASSWORD_INTAKE:?}"
acl --allow-principal User:intake --operation Read --group intake-timeline --topic tipline.reports.facts
acl --allow-principal User:intake --operation Write --topic tipline.deadletter.intake --topic tipline.reports.additions --topic tipline.reports.drafts --topic tipline.reports.submitted --topic tipline.retractions.requested
acl --allow-principal User:intake --operation Write --transactional-id tipline-intake- --resource-pattern-type prefixed

# validation
user validation "${TIPLINE_PASSWORD_VALIDATION:?}"
acl --allow-principal User:validation --operation Read --group validation --group validation-drafts --topic tipline.reports.drafts --topic tipline.reports.submitted
acl --allow-principal User:validation --operation Write --topic tipline.deadletter --topic tipline.reports.facts --topic tipline.reports.rejected --topic tipline.reports.validated
acl --allow-principal User:validation --operation Write --transactional-id tipline-validation- --resource-pattern-type prefixed

# supplementation
user supplementation "${TIPLINE_PASSWORD_SUPPLEMENTATION:?}"
acl --allow-principal User:supplementation --operation Read --group supplementation --group supplementation-additions --group supplementation-retractions --topic tipline.reports.additions --topic tipline.reports.retracted --topic tipline.reports.validated
acl --allow-principal User:supplementation --operation Write --topic tipline.amendments.requested --topic tipline.deadletter --topic tipline.reports.closed --topic tipline.reports.facts --topic tipline.reports.supplemented --topic tipline.reports.supplemented.bulk --topic tipline.reports.supplemented.urgent --topic tipline.retractions.requested
acl --allow-principal User:supplementation --operation Write --transactional-id tipline-supplementation- --resource-pattern-type prefixed

# referral
user referral "${TIPLINE_PASSWORD_REFERRAL:?}"
acl --allow-principal User:referral --operation Read --group referral --group referral-amendments --group referral-bulk --group referral-confirm --group referral-urgent --topic tipline.amendments.requested --topic tipline.reports.referred --topic tipline.reports.supplemented --topic tipline.reports.supplemented.bulk --topic tipline.reports.supplemented.urgent
acl --allow-principal User:referral --operation Write --topic tipline.deadletter --topic tipline.reports.facts --topic tipline.reports.referred
acl --allow-principal User:referral --operation Write --topic tipline.agency. --transactional-id tipline-referral- --resource-pattern-type prefixed
acl --deny-principal User:referral --operation Write --topic tipline.agency.acks

# retraction
user retraction "${TIPLINE_PASSWORD_RETRACTION:?}"
acl --allow-principal User:retraction --operation Read --group retraction --group retraction-acks --topic tipline.agency.acks --topic tipline.retractions.requested
acl --allow-principal User:retraction --operation Write --topic tipline.deadletter --topic tipline.notices.acknowledged --topic tipline.notices.escalated --topic tipline.notices.resent --topic tipline.reports.facts --topic tipline.reports.outcomes --topic tipline.reports.retracted
acl --allow-principal User:retraction --operation Write --topic tipline.agency. --transactional-id tipline-retraction- --resource-pattern-type prefixed
acl --deny-principal User:retraction --operation Write --topic tipline.agency.acks

# console
user console "${TIPLINE_PASSWORD_CONSOLE:?}"
acl --allow-principal User:console --operation Describe --group '*'
acl --allow-principal User:console --operation Read --group console --topic tipline.amendments.requested --topic tipline.deadletter --topic tipline.deadletter.intake --topic tipline.notices.acknowledged --topic tipline.notices.escalated --topic tipline.notices.resent --topic tipline.reports.additions --topic tipline.reports.closed --topic tipline.reports.drafts --topic tipline.reports.outcomes --topic tipline.reports.referred --topic tipline.reports.rejected --topic tipline.reports.retracted --topic tipline.reports.submitted --topic tipline.reports.supplemented --topic tipline.reports.supplemented.bulk --topic tipline.reports.supplemented.urgent --topic tipline.reports.validated --topic tipline.retractions.requested
acl --allow-principal User:console --operation Read --topic tipline.agency. --resource-pattern-type prefixed
acl --deny-principal User:console --operation Read --topic tipline.agency.acks

# agency-icac-ca
user agency-icac-ca "${TIPLINE_PASSWORD_AGENCY_ICAC_CA:?}"
acl --allow-principal User:agency-icac-ca --operation Read --group agency-icac-ca --topic tipline.agency.icac-ca
acl --allow-principal User:agency-icac-ca --operation Write --topic tipline.agency.acks

# agency-icac-tx
user agency-icac-tx "${TIPLINE_PASSWORD_AGENCY_ICAC_TX:?}"
acl --allow-principal User:agency-icac-tx --operation Read --group agency-icac-tx --topic tipline.agency.icac-tx
acl --allow-principal User:agency-icac-tx --operation Write --topic tipline.agency.acks

# agency-icac-ny
user agency-icac-ny "${TIPLINE_PASSWORD_AGENCY_ICAC_NY:?}"
acl --allow-principal User:agency-icac-ny --operation Read --group agency-icac-ny --topic tipline.agency.icac-ny
acl --allow-principal User:agency-icac-ny --operation Write --topic tipline.agency.acks

# agency-icac-fl
user agency-icac-fl "${TIPLINE_PASSWORD_AGENCY_ICAC_FL:?}"
acl --allow-principal User:agency-icac-fl --operation Read --group agency-icac-fl --topic tipline.agency.icac-fl
acl --allow-principal User:agency-icac-fl --operation Write --topic tipline.agency.acks

# agency-us-federal
user agency-us-federal "${TIPLINE_PASSWORD_AGENCY_US_FEDERAL:?}"
acl --allow-principal User:agency-us-federal --operation Read --group agency-us-federal --topic tipline.agency.us-federal
acl --allow-principal User:agency-us-federal --operation Write --topic tipline.agency.acks

# agency-uk-nca
user agency-uk-nca "${TIPLINE_PASSWORD_AGENCY_UK_NCA:?}"
acl --allow-principal User:agency-uk-nca --operation Read --group agency-uk-nca --topic tipline.agency.uk-nca
acl --allow-principal User:agency-uk-nca --operation Write --topic tipline.agency.acks

# agency-ca-rcmp
user agency-ca-rcmp "${TIPLINE_PASSWORD_AGENCY_CA_RCMP:?}"
acl --allow-principal User:agency-ca-rcmp --operation Read --group agency-ca-rcmp --topic tipline.agency.ca-rcmp
acl --allow-principal User:agency-ca-rcmp --operation Write --topic tipline.agency.acks

# agency-de-bka
user agency-de-bka "${TIPLINE_PASSWORD_AGENCY_DE_BKA:?}"
acl --allow-principal User:agency-de-bka --operation Read --group agency-de-bka --topic tipline.agency.de-bka
acl --allow-principal User:agency-de-bka --operation Write --topic tipline.agency.acks

# agency-intl-desk
user agency-intl-desk "${TIPLINE_PASSWORD_AGENCY_INTL_DESK:?}"
acl --allow-principal User:agency-intl-desk --operation Read --group agency-intl-desk --topic tipline.agency.intl-desk
acl --allow-principal User:agency-intl-desk --operation Write --topic tipline.agency.acks

echo "tipline: SCRAM users and ACLs set for 15 principals"
