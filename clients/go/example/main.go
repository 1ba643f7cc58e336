// Command example calls Switchyard from Go: one Query, then one StreamQuery
// printed as it arrives, each followed by a summary line. With -tools it makes
// a tool round trip instead (tools.go): the tool call, its result, the final
// answer and a summary line of each call.
//
//	example -address 127.0.0.1:50051 -prompt "Compare quicksort and mergesort"
//	SWITCHYARD_API_KEY=sy-... example -address gateway:50051 -tls-ca ca.pem
//	example -tools -prompt "What is the weather in Lisbon?"
//
// With -tls-ca it connects over TLS, trusting that CA; SWITCHYARD_API_KEY, when
// set, is sent as `authorization: Bearer <key>` (an environment variable, not a
// flag, so that the key never shows in `ps`).
//
// It uses only the generated stubs in gen/go and grpc-go. On failure it
// prints the gRPC status and the gateway's request id to stderr and exits
// with the status code's number (3 for INVALID_ARGUMENT, 14 for UNAVAILABLE).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	money "google.golang.org/genproto/googleapis/type/money"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	switchyardv1 "switchyard/gen/go/switchyard/v1"
)

func main() {
	address := flag.String("address", "127.0.0.1:50051", "the gateway's host:port")
	prompt := flag.String("prompt", "Compare quicksort and mergesort", "what to ask")
	caller := flag.String("caller", "go-example", "sent as x-switchyard-caller metadata")
	timeout := flag.Duration("timeout", 2*time.Minute, "deadline of each call")
	tlsCA := flag.String("tls-ca", "", "use TLS, trusting the CA certificate in this PEM file")
	tools := flag.Bool("tools", false, "make a tool round trip (get_weather) instead")
	model := flag.String("model", "", "with -tools: the model to ask (default: routed)")
	flag.Parse()

	apiKey := os.Getenv("SWITCHYARD_API_KEY")
	var err error
	if *tools {
		err = runTools(*address, *prompt, *caller, *model, *tlsCA, apiKey, *timeout)
	} else {
		err = run(*address, *prompt, *caller, *tlsCA, apiKey, *timeout)
	}
	if err != nil {
		st := status.Convert(err)
		fmt.Fprintf(os.Stderr, "error: %s: %s\n", st.Code(), st.Message())
		os.Exit(int(st.Code()))
	}
}

func run(address, prompt, caller, tlsCA, apiKey string, timeout time.Duration) error {
	// [readme:go]
	transport := grpc.WithInsecure() // plaintext, unless -tls-ca is given:
	if tlsCA != "" {
		// TLS, trusting the CA that signed the gateway's certificate
		tls, err := credentials.NewClientTLSFromFile(tlsCA, "")
		if err != nil {
			return err
		}
		transport = grpc.WithTransportCredentials(tls)
	}
	conn, err := grpc.Dial(address, transport)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := switchyardv1.NewGatewayServiceClient(conn)

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-switchyard-caller", caller)
	if apiKey != "" { // the key `switchyard keys create` printed
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+apiKey)
	}

	var trailer metadata.MD // carries x-switchyard-request-id when the call fails
	answer, err := client.Query(ctx, &switchyardv1.QueryRequest{
		Query: &switchyardv1.QuerySpec{Prompt: prompt},
	}, grpc.Trailer(&trailer))
	if err != nil {
		return withRequestID(err, trailer)
	}
	fmt.Println(answer.Content)
	fmt.Printf("query model=%s tokens_in=%d tokens_out=%d cost_usd=%s attempts=%d\n",
		answer.Model, answer.Usage.GetInputTokens(), answer.Usage.GetOutputTokens(),
		usd(answer.Cost), len(answer.Attempts))

	stream, err := client.StreamQuery(ctx, &switchyardv1.StreamQueryRequest{
		Query: &switchyardv1.QuerySpec{Prompt: prompt},
	})
	if err != nil {
		return err
	}
	model := ""
	for {
		message, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return withRequestID(err, stream.Trailer())
		}
		switch event := message.Event.(type) {
		case *switchyardv1.StreamQueryResponse_Start:
			model = event.Start.Model
		case *switchyardv1.StreamQueryResponse_Delta:
			fmt.Print(event.Delta.Text) // printed as it arrives
		case *switchyardv1.StreamQueryResponse_End:
			fmt.Printf("\nstream model=%s tokens_in=%d tokens_out=%d cost_usd=%s attempts=%d\n",
				model, event.End.Usage.GetInputTokens(), event.End.Usage.GetOutputTokens(),
				usd(event.End.Cost), len(event.End.Attempts))
		}
	}
	// [/readme:go]
	return nil
}

// usd renders google.type.Money exactly, as dollars with nine decimals.
func usd(m *money.Money) string {
	nanos := m.GetNanos()
	sign := ""
	if m.GetUnits() < 0 || nanos < 0 {
		sign = "-"
	}
	units, frac := m.GetUnits(), int64(nanos)
	if units < 0 {
		units = -units
	}
	if frac < 0 {
		frac = -frac
	}
	return fmt.Sprintf("%s%d.%09d", sign, units, frac)
}

// withRequestID keeps the status and adds the gateway's request id, which
// its operators need to find the call in the logs.
func withRequestID(err error, trailer metadata.MD) error {
	ids := trailer.Get("x-switchyard-request-id")
	if len(ids) == 0 {
		return err
	}
	st := status.Convert(err)
	return status.Errorf(st.Code(), "%s (request id %s)", st.Message(), ids[0])
}
