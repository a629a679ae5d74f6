# shellcheck shell=bash
# tests/lib/aws.sh: direct SQS/SNS/DynamoDB look-ups through bin/aws-call for
# the suites (source after cli.sh, which sets BIN; suite.sh does both).
#
#   sqs OP ARGS...       bin/aws-call sqs OP ARGS...
#   queue_url NAME       the URL of SQS queue NAME
#   topic_arn NAME       the ARN the deployment "$PFX" recorded for topic NAME
#   sub_queue NAME ARN   creates SQS queue NAME, subscribes it to topic ARN
#                        with raw message delivery, prints its URL

sqs() { "$BIN/aws-call" sqs "$@"; }

queue_url() {
  sqs GetQueueUrl "{\"QueueName\":\"$1\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["QueueUrl"])'
}

topic_arn() {
  "$BIN/aws-call" dynamodb GetItem "{\"TableName\":\"$PFX-meta\",\"Key\":{\"k\":{\"S\":\"topic#$1\"}}}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Item"]["arn"]["S"])'
}

sub_queue() {
  local url
  sqs CreateQueue "{\"QueueName\":\"$1\"}" >/dev/null || return 1
  url=$(queue_url "$1") || return 1
  "$BIN/aws-call" sns Subscribe TopicArn="$2" Protocol=sqs \
    Endpoint="arn:aws:sqs:${AWS_REGION:-us-east-1}:000000000000:$1" \
    Attributes.entry.1.key=RawMessageDelivery Attributes.entry.1.value=true >/dev/null || return 1
  echo "$url"
}
