package rabbit

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/shareless/shareless/internal/testenv"
)

// TestRestartKeepsDurableMessages checks what the consumer tests rely on:
// a restart keeps a durable queue's persistent messages and the port.
func TestRestartKeepsDurableMessages(t *testing.T) {
	testenv.SkipIfShort(t)
	testenv.NeedCommands(t, Commands()...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	publish := func() {
		conn, err := amqp.Dial(s.URL())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ch.QueueDeclare("q", true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.PublishWithContext(ctx, "", "q", false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("kept")}); err != nil {
			t.Fatal(err)
		}
	}
	publish()
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := amqp.Dial(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	d, ok, err := ch.Get("q", true)
	if err != nil || !ok || string(d.Body) != "kept" {
		t.Fatalf("after restart: %q %v %v", d.Body, ok, err)
	}
}
