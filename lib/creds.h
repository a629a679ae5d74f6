/* creds: AWS credentials, region and endpoints, resolved the way the AWS SDKs
 * do it.
 *
 * Credentials chain (first that yields a key wins):
 *   1. environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
 *   2. shared files: AWS_SHARED_CREDENTIALS_FILE (default ~/.aws/credentials)
 *      and AWS_CONFIG_FILE (default ~/.aws/config, "[profile NAME]" sections),
 *      profile AWS_PROFILE (default "default")
 *   3. web identity (EKS IRSA): AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN,
 *      the token exchanged with STS AssumeRoleWithWebIdentity
 *   4. container credentials: AWS_CONTAINER_CREDENTIALS_FULL_URI or
 *      http://169.254.170.2 + AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, with
 *      Authorization from AWS_CONTAINER_AUTHORIZATION_TOKEN or the contents of
 *      AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (ECS, EKS Pod Identity)
 *   5. EC2 instance metadata, IMDSv2 (token PUT, then role credentials),
 *      unless AWS_EC2_METADATA_DISABLED=true
 * Temporary credentials (3, 4, 5) are refreshed 5 minutes before they
 * expire, from the source that gave them.
 * Secrets are never printed or logged; memory holding them is wiped on free.
 *
 * Details (SDK behaviour):
 *   - env: a key without AWS_SECRET_ACCESS_KEY falls through to the next source.
 *   - files: the config file's values, overridden by the credentials file's.
 *     A profile named by AWS_PROFILE that exists in neither file stops the
 *     chain with an error. role_arn/sso/credential_process/
 *     web_identity_token_file in profiles are not supported.
 *   - web identity: only when both variables are set (one alone falls
 *     through). The token file (trailing white space dropped; empty or over
 *     16 KiB refused) is read at every refresh. An unsigned POST to STS:
 *     Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=..&
 *     RoleSessionName=..&WebIdentityToken=.. (form-encoded); the session
 *     name is AWS_ROLE_SESSION_NAME, else "delayer-<unix time ms>". STS is
 *     aws_endpoint("sts", region) (AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL,
 *     https://sts.<region>.amazonaws.com), or https://sts.amazonaws.com
 *     without a region; http only to loopback; *_proxy variables honoured
 *     (not for loopback). Timeouts 1 s connect / 5 s total, one retry
 *     (transport error or 5xx). When configured, its failure ends the chain;
 *     an ErrorResponse's Code and Message make the reason (the token
 *     redacted from it).
 *   - AWS_CA_BUNDLE: a PEM file trusted (besides the system's CAs) by the
 *     https calls of STS and container credentials, as by lib/aws.c; one
 *     that cannot be read fails the call with a reason naming it.
 *   - container: http:// FULL_URI only to loopback, 169.254.170.2,
 *     169.254.170.23 or [fd00:ec2::23]; anything else must be https. Timeouts
 *     1 s connect / 2 s total, one retry (transport error or 5xx). When
 *     configured, its failure ends the chain (IMDS is not tried).
 *   - IMDS: endpoint AWS_EC2_METADATA_SERVICE_ENDPOINT (tests), else
 *     http://169.254.169.254 ([fd00:ec2::254] when
 *     AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6); 1 s timeouts, no retry.
 *   - a failed refresh keeps still-valid credentials (and is retried no more
 *     than every 10 s until they expire).
 * An aws_credp is not thread-safe: one per thread, or a lock around it. */
#ifndef DELAYER_CREDS_H
#define DELAYER_CREDS_H
#include <stdint.h>
#include <stddef.h>
#include "buf.h"

typedef struct {
    char *access_key;
    char *secret_key;
    char *session_token;  /* NULL if none */
    int64_t expires_ms;   /* 0 = does not expire */
    const char *source;   /* "env", "profile", "web-identity", "container", "imds" (static string) */
} aws_creds;

typedef struct aws_credp aws_credp;

aws_credp *aws_credp_new(void);
/* Valid credentials (a borrowed pointer, valid until the next call),
 * refreshing temporary ones that expire within 5 minutes.
 * NULL with a one-line reason in err when no source yields credentials. */
const aws_creds *aws_credp_get(aws_credp *cp, char *err, size_t errlen);
void aws_credp_free(aws_credp *cp);
/* Added: forget the cached credentials (e.g. after an ExpiredToken reply);
 * the next aws_credp_get resolves the chain again. */
void aws_credp_invalidate(aws_credp *cp);

/* Region: AWS_REGION, then AWS_DEFAULT_REGION, then the profile's "region"
 * in the config file. -1 (err set) if none or not [A-Za-z0-9-]. out is replaced. */
int aws_region(buf_t *out, char *err, size_t errlen);

/* Endpoint for a service ("dynamodb", "sqs", "sns", "sts"):
 * AWS_ENDPOINT_URL_<SERVICE> (upper case), then AWS_ENDPOINT_URL, then
 * https://<service>.<region>.amazonaws.com (.amazonaws.com.cn for cn-*).
 * No trailing slash. The env values are ignored when
 * AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true. out is replaced; -1 if service
 * is empty, or no env value and region is empty/invalid. */
int aws_endpoint(const char *service, const char *region, buf_t *out);

/* 1 if the URL's host is loopback (127.0.0.0/8, ::1, ::ffff:127.x, localhost).
 * The host must be exactly that: "127.0.0.1.evil.com" is not. */
int aws_url_is_loopback(const char *url);

/* AWS_CA_BUNDLE for a URL about to be used: 0 when it is unset or empty,
 * when the URL is not https://, or when the file is readable; -1 with a
 * one-line reason naming AWS_CA_BUNDLE in err otherwise. */
int aws_ca_bundle_check(const char *url, char *err, size_t errlen);
#endif
