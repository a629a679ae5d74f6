/* test_xml: the AWS query-reply XML reader (lib/xml.c). */
#include "t.h"
#include "xml.h"

/* Replies as SNS (and fauxqs) send them. */
static const char CREATE_TOPIC[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<CreateTopicResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\n"
    "  <CreateTopicResult>\n"
    "    <TopicArn>arn:aws:sns:us-east-1:123456789012:my-topic</TopicArn>\n"
    "  </CreateTopicResult>\n"
    "  <ResponseMetadata>\n"
    "    <RequestId>a8dec8b3-33a4-11df-8963-01868b7c937a</RequestId>\n"
    "  </ResponseMetadata>\n"
    "</CreateTopicResponse>\n";

static const char PUBLISH[] =
    "<PublishResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">"
    "<PublishResult><MessageId>94f20ce6-13c5-43a0-9a9e-ca52d816e90b</MessageId></PublishResult>"
    "<ResponseMetadata><RequestId>f187a3c1-376f-11df-8963-01868b7c937a</RequestId></ResponseMetadata>"
    "</PublishResponse>";

static const char PUBLISH_BATCH[] =
    "<PublishBatchResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\n"
    "  <PublishBatchResult>\n"
    "    <Successful>\n"
    "      <member><Id>a</Id><MessageId>mid-a</MessageId></member>\n"
    "      <member><MessageId>mid-c</MessageId><Id>c</Id></member>\n"
    "    </Successful>\n"
    "    <Failed>\n"
    "      <member>\n"
    "        <Code>InvalidParameter</Code>\n"
    "        <Id>b</Id>\n"
    "        <Message>Message too long &amp; bad</Message>\n"
    "        <SenderFault>true</SenderFault>\n"
    "      </member>\n"
    "    </Failed>\n"
    "  </PublishBatchResult>\n"
    "  <ResponseMetadata><RequestId>r1</RequestId></ResponseMetadata>\n"
    "</PublishBatchResponse>\n";

static const char ERROR_RESPONSE[] =
    "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\n"
    "  <Error>\n"
    "    <Type>Sender</Type>\n"
    "    <Code>NotFound</Code>\n"
    "    <Message>Topic does not exist</Message>\n"
    "  </Error>\n"
    "  <RequestId>9dd01905-5012-5f99-8663-4b3ecd0dfaef</RequestId>\n"
    "</ErrorResponse>\n";

static int text(const char *xml, const char *name, buf_t *out)
{
    return xml_text(xml, strlen(xml), name, out);
}

static void test_create_topic(void)
{
    buf_t b = BUF_INIT;
    CHECK_INT(text(CREATE_TOPIC, "TopicArn", &b), 0);
    CHECK_STR(buf_str(&b), "arn:aws:sns:us-east-1:123456789012:my-topic");
    CHECK_INT(text(CREATE_TOPIC, "RequestId", &b), 0);
    CHECK_STR(buf_str(&b), "a8dec8b3-33a4-11df-8963-01868b7c937a");
    CHECK_INT(text(CREATE_TOPIC, "NoSuchThing", &b), -1);
    CHECK_INT(text(CREATE_TOPIC, "Topic", &b), -1);    /* no prefix matching */
    buf_free(&b);
}

static void test_publish(void)
{
    buf_t b = BUF_INIT;
    CHECK_INT(text(PUBLISH, "MessageId", &b), 0);
    CHECK_STR(buf_str(&b), "94f20ce6-13c5-43a0-9a9e-ca52d816e90b");
    buf_free(&b);
}

/* Iterates the members of <Successful>/<Failed> as sns.c does. */
static void test_publish_batch(void)
{
    const char *x = PUBLISH_BATCH;
    size_t n = strlen(x), ss, se, ms, me, from;
    buf_t id = BUF_INIT, v = BUF_INIT;
    CHECK_INT(xml_find(x, n, 0, "Successful", NULL, &ss, &se), 0);
    from = ss;
    const char *want_id[] = { "a", "c" }, *want_mid[] = { "mid-a", "mid-c" };
    int count = 0;
    while (xml_find(x, se, from, "member", NULL, &ms, &me) == 0) {
        CHECK(count < 2);
        if (count >= 2) break;
        CHECK_INT(xml_find(x, me, ms, "Id", &id, NULL, NULL), 0);
        CHECK_STR(buf_str(&id), want_id[count]);
        CHECK_INT(xml_find(x, me, ms, "MessageId", &v, NULL, NULL), 0);
        CHECK_STR(buf_str(&v), want_mid[count]);
        /* The search must stay inside the member: no Code here. */
        CHECK_INT(xml_find(x, me, ms, "Code", &v, NULL, NULL), -1);
        count++;
        from = me;
    }
    CHECK_INT(count, 2);
    CHECK_INT(xml_find(x, n, 0, "Failed", NULL, &ss, &se), 0);
    CHECK_INT(xml_find(x, se, ss, "member", NULL, &ms, &me), 0);
    CHECK_INT(xml_find(x, me, ms, "Id", &id, NULL, NULL), 0);
    CHECK_STR(buf_str(&id), "b");
    CHECK_INT(xml_find(x, me, ms, "Code", &v, NULL, NULL), 0);
    CHECK_STR(buf_str(&v), "InvalidParameter");
    CHECK_INT(xml_find(x, me, ms, "Message", &v, NULL, NULL), 0);
    CHECK_STR(buf_str(&v), "Message too long & bad");
    CHECK_INT(xml_find(x, me, ms, "SenderFault", &v, NULL, NULL), 0);
    CHECK_STR(buf_str(&v), "true");
    CHECK_INT(xml_find(x, se, me, "member", NULL, &ms, &me), -1);
    buf_free(&id);
    buf_free(&v);
}

static void test_error_response(void)
{
    const char *x = ERROR_RESPONSE;
    size_t es, ee;
    buf_t b = BUF_INIT;
    CHECK_INT(xml_find(x, strlen(x), 0, "Error", NULL, &es, &ee), 0);
    CHECK(strncmp(x + es, "<Error>", 7) == 0);
    CHECK(strncmp(x + ee - 8, "</Error>", 8) == 0);
    CHECK_INT(xml_find(x, ee, es, "Code", &b, NULL, NULL), 0);
    CHECK_STR(buf_str(&b), "NotFound");
    CHECK_INT(xml_find(x, ee, es, "Message", &b, NULL, NULL), 0);
    CHECK_STR(buf_str(&b), "Topic does not exist");
    CHECK_INT(xml_find(x, ee, es, "RequestId", &b, NULL, NULL), -1);  /* outside the range */
    buf_free(&b);
}

static void test_entities(void)
{
    buf_t b = BUF_INIT;
    CHECK_INT(text("<a>&lt;&gt;&amp;&quot;&apos;&#65;&#x42;&#x20AC;&#128512;</a>", "a", &b), 0);
    CHECK_STR(buf_str(&b), "<>&\"'AB\xE2\x82\xAC\xF0\x9F\x98\x80");
    CHECK_INT(text("<a>x &amp;amp; y</a>", "a", &b), 0);
    CHECK_STR(buf_str(&b), "x &amp; y");           /* decoded once, not twice */
    CHECK_INT(text("<a>&bogus;</a>", "a", &b), -1);
    CHECK_INT(text("<a>&#0;</a>", "a", &b), -1);
    CHECK_INT(text("<a>&#xD800;</a>", "a", &b), -1);
    CHECK_INT(text("<a>&#x110000;</a>", "a", &b), -1);
    CHECK_INT(text("<a>&#;</a>", "a", &b), -1);
    CHECK_INT(text("<a>&#x;</a>", "a", &b), -1);
    CHECK_INT(text("<a>a & b</a>", "a", &b), -1);
    CHECK_INT(text("<a>&amp</a>", "a", &b), -1);
    buf_free(&b);
}

static void test_cdata(void)
{
    buf_t b = BUF_INIT;
    const char *x = "<Error><Message><![CDATA[<Code>fake</Code> &amp; ]]]]></Message>"
                    "<Code>real</Code></Error>";
    CHECK_INT(text(x, "Code", &b), 0);
    CHECK_STR(buf_str(&b), "real");
    CHECK_INT(text(x, "Message", &b), 0);
    CHECK_STR(buf_str(&b), "<Code>fake</Code> &amp; ]]");
    /* Only CDATA holds a Code: never found. */
    CHECK_INT(text("<a><![CDATA[<Code>fake</Code>]]></a>", "Code", &b), -1);
    CHECK_INT(text("<a>x<![CDATA[y]]>z</a>", "a", &b), 0);
    CHECK_STR(buf_str(&b), "xyz");
    buf_free(&b);
}

static void test_escaped_tags_are_text(void)
{
    buf_t b = BUF_INIT;
    const char *x = "<Error><Message>&lt;Code&gt;fake&lt;/Code&gt;</Message></Error>";
    CHECK_INT(text(x, "Code", &b), -1);
    CHECK_INT(text(x, "Message", &b), 0);
    CHECK_STR(buf_str(&b), "<Code>fake</Code>");
    buf_free(&b);
}

static void test_comments_and_declarations(void)
{
    buf_t b = BUF_INIT;
    const char *x = "<?xml version=\"1.0\"?>\n<!DOCTYPE r [ <!ENTITY e \"<Code>d</Code>\"> ]>\n"
                    "<!-- <Code>comment</Code> -->"
                    "<r><?pi <Code>pi</Code> ?><Code>a<!-- <b>no</b> -->b</Code></r>";
    CHECK_INT(text(x, "Code", &b), 0);
    CHECK_STR(buf_str(&b), "ab");
    buf_free(&b);
}

static void test_namespaces_attributes_selfclosing(void)
{
    buf_t b = BUF_INIT;
    const char *x = "<s:Env xmlns:s=\"urn:x\"><s:Empty a='1'/><s:Body id=\"x>y\" q='/>'>"
                    "<ns2:Code xmlns:ns2=\"urn:y\">pfx</ns2:Code></s:Body></s:Env>";
    size_t s, e;
    CHECK_INT(text(x, "Code", &b), 0);
    CHECK_STR(buf_str(&b), "pfx");
    CHECK_INT(xml_find(x, strlen(x), 0, "Empty", &b, &s, &e), 0);
    CHECK_STR(buf_str(&b), "");
    CHECK(strncmp(x + s, "<s:Empty", 8) == 0 && x[e - 1] == '>' && x[e - 2] == '/');
    CHECK_INT(text(x, "Body", &b), 0);
    CHECK_STR(buf_str(&b), "pfx");
    CHECK_INT(text("<a><b/>t<c/></a>", "a", &b), 0);
    CHECK_STR(buf_str(&b), "t");
    /* Mismatched end tag of the element itself is malformed. */
    CHECK_INT(text("<a>x</b>", "a", &b), -1);
    buf_free(&b);
}

static void test_nested_same_name(void)
{
    buf_t b = BUF_INIT;
    size_t s, e;
    const char *x = "<r><member><member>in</member>out</member><member>2</member></r>";
    CHECK_INT(xml_find(x, strlen(x), 0, "member", &b, &s, &e), 0);
    CHECK_STR(buf_str(&b), "inout");
    CHECK_INT(xml_find(x, strlen(x), e, "member", &b, &s, &e), 0);
    CHECK_STR(buf_str(&b), "2");
    buf_free(&b);
}

/* Every prefix of every sample: no crash, no out-of-bounds read (ASan checks
 * this: each prefix is copied to an exactly-sized heap block). */
static void test_truncated(void)
{
    const char *samples[] = { CREATE_TOPIC, PUBLISH, PUBLISH_BATCH, ERROR_RESPONSE,
        "<a x='1'><![CDATA[<b>]]><!-- c --><?p?>&#x41;&lt;<b/></a>" };
    const char *names[] = { "TopicArn", "MessageId", "Successful", "Member", "member", "Code", "Id", "a", "b" };
    buf_t b = BUF_INIT;
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        size_t n = strlen(samples[i]);
        for (size_t k = 0; k < n; k++) {
            char *p = malloc(k ? k : 1);
            memcpy(p, samples[i], k);
            for (size_t j = 0; j < sizeof names / sizeof names[0]; j++) {
                size_t s = 0, e = 0;
                if (xml_find(p, k, 0, names[j], &b, &s, &e) == 0)
                    CHECK(s < e && e <= k);
            }
            free(p);
        }
    }
    /* A document cut inside the value is an error, not a partial value. */
    CHECK_INT(xml_text(PUBLISH, 80, "MessageId", &b), -1);
    CHECK_INT(xml_find(PUBLISH, 10, 11, "MessageId", &b, NULL, NULL), -1);  /* from past len */
    buf_free(&b);
}

T_MAIN(T(test_create_topic), T(test_publish), T(test_publish_batch), T(test_error_response),
       T(test_entities), T(test_cdata), T(test_escaped_tags_are_text),
       T(test_comments_and_declarations), T(test_namespaces_attributes_selfclosing),
       T(test_nested_same_name), T(test_truncated))
