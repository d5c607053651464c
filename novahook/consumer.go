package novahook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/shareless/shareless/config"
)

// Handler applies a parsed notification. It returns only once the effect
// is durable: the consumer acknowledges the message right after. An error
// is fatal to the consumer (the agent's state can no longer be trusted).
type Handler interface {
	HandleNotification(ctx context.Context, n Notification) (Outcome, error)
}

// ConsumerConfig is what the consumer needs from [config.Config].
type ConsumerConfig struct {
	Brokers         []config.BrokerHost // tried in turn, like oslo's host list
	VirtualHost     string
	Exchange        string
	ExchangeDurable bool
	Topic           string
	Queue           string
	SetAsideQueue   string
	Prefetch        int
	Heartbeat       time.Duration
	ReconnectMin    time.Duration
	ReconnectMax    time.Duration
	ConnectionName  string // shown in the broker's connection list
}

// ConsumerConfigFrom takes the consumer's settings from the agent's config.
func ConsumerConfigFrom(c *config.Config) ConsumerConfig {
	return ConsumerConfig{
		Brokers:         c.BrokerHosts(),
		VirtualHost:     c.AMQP.TransportURL.VirtualHost,
		Exchange:        c.AMQP.Exchange,
		ExchangeDurable: c.AMQP.ExchangeDurable,
		Topic:           c.AMQP.Topic,
		Queue:           c.QueueName(),
		SetAsideQueue:   c.SetAsideQueueName(),
		Prefetch:        c.AMQP.Prefetch,
		Heartbeat:       c.AMQP.Heartbeat,
		ReconnectMin:    c.AMQP.ReconnectMin,
		ReconnectMax:    c.AMQP.ReconnectMax,
		ConnectionName:  "shareless-agent " + c.Default.Host,
	}
}

// Header keys on set-aside messages.
const (
	HeaderError      = "x-shareless-error"
	HeaderRoutingKey = "x-shareless-routing-key"
	HeaderExchange   = "x-shareless-exchange"
)

// Consumer reads Nova's versioned notifications from the agent's own
// durable queue, bound to Nova's exchange with <topic>.info and
// <topic>.error, and hands them to a Handler.
//
// Delivery is at least once: a message is acknowledged only after the
// handler made its effect durable, so a crash or a broker restart makes the
// broker deliver it again and the handler recognises it by message_id.
// A message that does not parse is published unchanged, with the reason in
// a header, to the set-aside queue and acknowledged: it never blocks the
// queue and never makes the agent crash-loop.
type Consumer struct {
	cfg     ConsumerConfig
	handler Handler
	log     *slog.Logger
}

// NewConsumer returns a consumer; Run starts it.
func NewConsumer(cfg ConsumerConfig, h Handler, log *slog.Logger) *Consumer {
	return &Consumer{cfg: cfg, handler: h, log: log.With("queue", cfg.Queue)}
}

// errFatal marks errors after which reconnecting cannot help.
type errFatal struct{ err error }

func (e errFatal) Error() string { return e.err.Error() }
func (e errFatal) Unwrap() error { return e.err }

// Run consumes until ctx ends (then it returns nil) or the handler fails.
// Connection failures are retried with exponential backoff between
// ReconnectMin and ReconnectMax, rotating through the brokers.
func (c *Consumer) Run(ctx context.Context) error {
	if len(c.cfg.Brokers) == 0 {
		return errors.New("amqp consumer: no broker hosts")
	}
	delay := c.cfg.ReconnectMin
	for attempt := 0; ; attempt++ {
		broker := c.cfg.Brokers[attempt%len(c.cfg.Brokers)]
		started := time.Now()
		err := c.session(ctx, broker)
		if ctx.Err() != nil {
			return nil
		}
		var fatal errFatal
		if errors.As(err, &fatal) {
			return fatal.err
		}
		if time.Since(started) > c.cfg.ReconnectMax {
			delay = c.cfg.ReconnectMin // the session was healthy for a while
		}
		c.log.Warn("amqp session ended; reconnecting", "broker", broker.Addr(), "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, c.cfg.ReconnectMax)
	}
}

// session runs one connection: connect, declare, consume until an error.
func (c *Consumer) session(ctx context.Context, broker config.BrokerHost) error {
	conn, err := amqp.DialConfig("amqp://"+broker.Addr()+"/", amqp.Config{
		SASL:      []amqp.Authentication{&amqp.PlainAuth{Username: broker.Username, Password: broker.Password.Reveal()}},
		Vhost:     c.cfg.VirtualHost,
		Heartbeat: c.cfg.Heartbeat,
		Properties: amqp.Table{
			"connection_name": c.cfg.ConnectionName,
		},
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: 10 * time.Second}
			return d.DialContext(ctx, network, addr)
		},
	})
	if err != nil {
		return fmt.Errorf("connect %s: %w", broker.Addr(), err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	deliveries, err := c.declare(ch)
	if err != nil {
		return err
	}
	c.log.Info("consuming Nova notifications", "broker", broker.Addr(), "exchange", c.cfg.Exchange)
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-closed:
			return fmt.Errorf("connection closed: %v", e)
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("delivery channel closed")
			}
			if err := c.deliver(ctx, ch, d); err != nil {
				return err
			}
		}
	}
}

// declare sets up the channel. The exchange is declared exactly as
// oslo.messaging declares it for Nova (topic, durable only with
// amqp_durable_queues, not auto-delete), so the two declarations never
// conflict whichever comes first.
func (c *Consumer) declare(ch *amqp.Channel) (<-chan amqp.Delivery, error) {
	if err := ch.Qos(c.cfg.Prefetch, 0, false); err != nil {
		return nil, fmt.Errorf("qos: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		return nil, fmt.Errorf("confirm mode: %w", err)
	}
	if err := ch.ExchangeDeclare(c.cfg.Exchange, amqp.ExchangeTopic, c.cfg.ExchangeDurable, false, false, false, nil); err != nil {
		return nil, fmt.Errorf("declare exchange %q (durable=%v must match nova's amqp_durable_queues): %w", c.cfg.Exchange, c.cfg.ExchangeDurable, err)
	}
	for _, q := range []string{c.cfg.Queue, c.cfg.SetAsideQueue} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			return nil, fmt.Errorf("declare queue %q: %w", q, err)
		}
	}
	for _, key := range []string{c.cfg.Topic + ".info", c.cfg.Topic + ".error"} {
		if err := ch.QueueBind(c.cfg.Queue, key, c.cfg.Exchange, false, nil); err != nil {
			return nil, fmt.Errorf("bind %q to %s/%s: %w", c.cfg.Queue, c.cfg.Exchange, key, err)
		}
	}
	deliveries, err := ch.Consume(c.cfg.Queue, c.cfg.ConnectionName, false, false, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("consume %q: %w", c.cfg.Queue, err)
	}
	return deliveries, nil
}

// deliver handles one message and acknowledges it. A returned error ends
// the session; the message is then redelivered.
func (c *Consumer) deliver(ctx context.Context, ch *amqp.Channel, d amqp.Delivery) error {
	n, perr := Parse(d.Body)
	if perr != nil {
		return c.setAside(ctx, ch, d, perr)
	}
	outcome, err := c.handler.HandleNotification(ctx, n)
	if err != nil {
		return errFatal{fmt.Errorf("handle %s %s: %w", n.EventType, n.MessageID, err)}
	}
	c.log.Debug("notification", "outcome", outcome, "message_id", n.MessageID, "event_type", n.EventType,
		"publisher", n.Publisher.String(), "instance", n.Payload.InstanceUUID, "redelivered", d.Redelivered)
	if err := d.Ack(false); err != nil {
		return fmt.Errorf("ack %s: %w", n.MessageID, err)
	}
	return nil
}

// setAside moves an unparseable message to the set-aside queue: publish
// (confirmed by the broker), then ack the original.
func (c *Consumer) setAside(ctx context.Context, ch *amqp.Channel, d amqp.Delivery, reason error) error {
	c.log.Warn("unparseable message set aside", "err", reason, "bytes", len(d.Body),
		"routing_key", d.RoutingKey, "set_aside_queue", c.cfg.SetAsideQueue)
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", c.cfg.SetAsideQueue, true, false, amqp.Publishing{
		Headers: amqp.Table{
			HeaderError:      reason.Error(),
			HeaderRoutingKey: d.RoutingKey,
			HeaderExchange:   d.Exchange,
		},
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		DeliveryMode:    amqp.Persistent,
		Timestamp:       time.Now(),
		Body:            d.Body,
	})
	if err != nil {
		return fmt.Errorf("set aside: %w", err)
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil || !ok {
		return fmt.Errorf("set aside: broker did not confirm (ok=%v): %v", ok, err)
	}
	if err := d.Ack(false); err != nil {
		return fmt.Errorf("ack set-aside message: %w", err)
	}
	return nil
}
