package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	switchyardv1 "switchyard/gen/go/switchyard/v1"
)

// getWeather is the tool itself: a stand-in for a real weather service.
func getWeather(args map[string]interface{}) map[string]interface{} {
	city, unit := args["city"], args["unit"]
	if city == nil {
		city = "unknown"
	}
	if unit == nil {
		unit = "celsius"
	}
	return map[string]interface{}{"city": city, "unit": unit, "temperature": 21}
}

// runTools makes one tool round trip: it offers get_weather, runs the calls
// the model asks for, sends their results back and prints the final answer.
func runTools(address, prompt, caller, model, tlsCA, apiKey string, timeout time.Duration) error {
	transport := grpc.WithInsecure()
	if tlsCA != "" {
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
	if apiKey != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+apiKey)
	}

	// [readme:go-tools]
	parameters, err := structpb.NewStruct(map[string]interface{}{
		"type": "object",
		"properties": map[string]interface{}{
			"city": map[string]interface{}{"type": "string"},
			"unit": map[string]interface{}{"type": "string", "enum": []interface{}{"celsius", "fahrenheit"}},
		},
		"required": []interface{}{"city", "unit"},
	})
	if err != nil {
		return err
	}
	tools := []*switchyardv1.Tool{{
		Name:        "get_weather",
		Description: "The current weather in a city",
		Parameters:  parameters,
	}}
	question := &switchyardv1.Message{Role: switchyardv1.Role_ROLE_USER, Content: prompt}
	var trailer metadata.MD // carries x-switchyard-request-id when the call fails
	first, err := client.Query(ctx, &switchyardv1.QueryRequest{Query: &switchyardv1.QuerySpec{
		Messages: []*switchyardv1.Message{question}, Tools: tools, Model: model,
	}}, grpc.Trailer(&trailer))
	if err != nil {
		return withRequestID(err, trailer)
	}
	if first.FinishReason != switchyardv1.FinishReason_FINISH_REASON_TOOL_CALLS {
		fmt.Println(first.Content) // the model answered without the tool
		return nil
	}
	// The answer as it came goes back first: reasoning, then text and tool calls.
	answer := &switchyardv1.Message{Role: switchyardv1.Role_ROLE_ASSISTANT, Parts: first.Reasoning}
	if first.Content != "" {
		answer.Parts = append(answer.Parts, &switchyardv1.Part{Kind: &switchyardv1.Part_Text{Text: first.Content}})
	}
	results := &switchyardv1.Message{Role: switchyardv1.Role_ROLE_TOOL}
	for _, call := range first.ToolCalls {
		arguments, _ := json.Marshal(call.Arguments.AsMap())
		fmt.Printf("tool call %s %s (id %s)\n", call.Name, arguments, call.Id)
		answer.Parts = append(answer.Parts, &switchyardv1.Part{Kind: &switchyardv1.Part_ToolCall{ToolCall: call}})
		// Run the tool; its result goes back under the call's id.
		content, err := json.Marshal(getWeather(call.Arguments.AsMap()))
		if err != nil {
			return err
		}
		fmt.Printf("tool result %s\n", content)
		results.Parts = append(results.Parts, &switchyardv1.Part{Kind: &switchyardv1.Part_ToolResult{
			ToolResult: &switchyardv1.ToolResult{ToolCallId: call.Id, Content: string(content)},
		}})
	}
	final, err := client.Query(ctx, &switchyardv1.QueryRequest{Query: &switchyardv1.QuerySpec{
		Messages: []*switchyardv1.Message{question, answer, results}, Tools: tools, Model: model,
	}}, grpc.Trailer(&trailer))
	if err != nil {
		return withRequestID(err, trailer)
	}
	fmt.Println(final.Content)
	// [/readme:go-tools]
	summary("ask", first)
	summary("reply", final)
	return nil
}

// summary prints one call's model, finish reason, usage, exact cost and attempts.
func summary(kind string, answer *switchyardv1.QueryResponse) {
	fmt.Printf("%s model=%s finish=%s tokens_in=%d tokens_out=%d cost_usd=%s attempts=%d\n",
		kind, answer.Model, strings.TrimPrefix(answer.FinishReason.String(), "FINISH_REASON_"),
		answer.Usage.GetInputTokens(), answer.Usage.GetOutputTokens(), usd(answer.Cost),
		len(answer.Attempts))
}
